"""headwater.triggers"""

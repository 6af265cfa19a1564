"""headwater.engine"""

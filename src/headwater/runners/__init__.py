"""headwater.runners"""

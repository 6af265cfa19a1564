"""headwater.worker"""

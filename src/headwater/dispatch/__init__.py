"""headwater.dispatch"""

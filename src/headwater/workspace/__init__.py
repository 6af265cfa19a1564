"""headwater.workspace"""

"""headwater.server"""

"""headwater.sdk"""

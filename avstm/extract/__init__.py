"""avstm.extract"""

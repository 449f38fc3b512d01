"""avstm.localize"""

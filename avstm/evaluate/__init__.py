"""avstm.evaluate"""

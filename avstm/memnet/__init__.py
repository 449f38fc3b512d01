"""avstm.memnet"""

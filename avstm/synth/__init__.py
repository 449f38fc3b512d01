"""avstm.synth"""

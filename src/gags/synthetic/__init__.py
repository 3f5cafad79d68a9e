"""gags.synthetic"""

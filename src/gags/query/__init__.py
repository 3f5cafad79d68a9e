"""gags.query"""

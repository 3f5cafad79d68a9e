"""gags.evaluate"""

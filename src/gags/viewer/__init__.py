"""gags.viewer"""

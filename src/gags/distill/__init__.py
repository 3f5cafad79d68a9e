"""gags.distill"""

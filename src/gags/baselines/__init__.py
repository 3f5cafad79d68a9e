"""gags.baselines"""

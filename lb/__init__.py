"""edgectl.lb"""

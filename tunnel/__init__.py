"""edgectl.tunnel"""

"""edgectl.netpol"""

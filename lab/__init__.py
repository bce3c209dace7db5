"""edgectl.lab"""

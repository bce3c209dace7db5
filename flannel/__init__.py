"""edgectl.flannel"""

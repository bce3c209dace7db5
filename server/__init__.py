"""edgectl.server"""

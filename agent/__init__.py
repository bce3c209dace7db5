"""edgectl.agent"""

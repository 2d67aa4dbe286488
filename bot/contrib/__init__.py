"""What is not the product's core: simulated participants and their clips, the demo, the load generator.

It may use anything in ``bot``; nothing in the core imports it.
"""

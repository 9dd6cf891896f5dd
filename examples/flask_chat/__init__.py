"""A small chat app whose answers survive reloads, reach every tab live, and stop for everyone.

Run it with ``python -m examples.flask_chat`` (see ``README.md`` beside this file).
"""

"""Small pieces every AttrSpace package uses: atomic file output and image conventions.

It imports no other AttrSpace package, so render/, model/, training/ and the rest can all use it.
"""

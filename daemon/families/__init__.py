"""API families: each folder translates one API (its wire JSON ⇄ typed jobs and events) and serves its routes.

`line/` is rk's own line protocol (its own transport, picked by the listener); the HTTP families are
listed in `registry.py`.
"""

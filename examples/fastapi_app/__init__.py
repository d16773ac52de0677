"""FastAPI recipe: the web app enqueues in its request's transaction; pods run the jobs.

See app.py (the web process) and tasks.py (what the pods import), and docs/recipes.md.
"""

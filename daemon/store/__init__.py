"""The model store: manifests on disk, what a model's files say (GGUF headers, chat templates), Modelfiles,
imports, and hub pulls and creates. A leaf: it knows nothing of jobs, queues, runners or APIs (an
import-linter contract keeps it so), so every layer above may use it."""

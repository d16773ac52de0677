"""What both sides (supervisor and worker) need. Imports neither side."""

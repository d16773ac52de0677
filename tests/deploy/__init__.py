"""The deployment assets: the Helm chart, the Dockerfile and the monitoring rules and dashboard."""

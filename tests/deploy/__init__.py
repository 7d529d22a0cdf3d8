"""Offline proof of the deployment files: Dockerfile, docker-compose.yml, deploy/k8s."""

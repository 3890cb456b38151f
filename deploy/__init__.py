"""Deployment: the cluster harness (deploy.cluster) and what operators install."""

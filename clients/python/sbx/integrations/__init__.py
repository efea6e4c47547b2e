"""Adapters that let other frameworks use sbx as their sandbox backend."""

"""Small helpers shared by every command."""

"""Client N: the chat page on port 8500+N and a forwarding proxy on 8000+N that adds session headers."""

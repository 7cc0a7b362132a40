"""Web pieces shared by the main server and the client proxy, free of the chat, upload and engine code."""

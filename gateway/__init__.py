"""The HTTP service apps point their OpenAI base URL at."""

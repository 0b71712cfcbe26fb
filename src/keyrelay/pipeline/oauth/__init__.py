"""OAuth2 for sources: the credential's configuration (config), token-endpoint calls (grant), and access tokens
cached, refreshed single-flight and stored sealed (tokens). The sealed state lives in store/oauth_state.py."""

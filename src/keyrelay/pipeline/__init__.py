"""The request pipeline: small steps that build, send and check one relayed request."""

"""WebRTC glue: one peer connection per remote person, track readers, result routing and ICE."""

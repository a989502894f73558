"""DQL, ModelHub's query language over model versions: issue 9. Nothing here yet."""

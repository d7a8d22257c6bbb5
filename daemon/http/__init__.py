"""HTTP plumbing shared by the API families: the aiohttp app, middleware, body reading, job streams."""

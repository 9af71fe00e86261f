"""The HTTP face: the app and its middleware, the windows', partners' and auditors' APIs."""

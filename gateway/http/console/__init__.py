"""The console: web pages for the people at the windows, the auditors and the admins, served
by the gateway itself at ``/console/`` (zh-CN, every asset local: it works on an intranet with
no internet). Server-rendered with Jinja2, a small script of our own, no build tool (why:
docs/console.md). The pages are a thin shell over the same services as the APIs.
"""

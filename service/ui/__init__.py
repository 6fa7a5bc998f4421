"""The results explorer: server-rendered pages under ``/ui`` over the query API's reads."""

"""Adapters translate between one API's wire JSON and the internal jobs and events. No queue or model logic here."""

"""Tests of the HTTP runner (kalla serve)."""

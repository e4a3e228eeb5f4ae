//! Tests of the services application.

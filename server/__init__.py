"""The iworkflow server: DAG records, failure monitor, REST API and dashboard."""

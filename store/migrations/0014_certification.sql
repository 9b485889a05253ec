-- What a gate certified a run on (`distiller/certification.py`): the teacher and judge, and
-- digests of the eval rows and of the artifact measured. Empty in reports written before.
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS teacher String DEFAULT '';
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS judge String DEFAULT '';
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS data_digest String DEFAULT '';
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS artifact_digest String DEFAULT '';

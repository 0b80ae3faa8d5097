BEGIN TRANSACTION;
CREATE TABLE check_results (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	description TEXT NOT NULL, 
	public BOOLEAN NOT NULL, 
	points FLOAT NOT NULL, 
	max_points FLOAT NOT NULL, 
	outcome VARCHAR(20) NOT NULL, 
	message TEXT NOT NULL, 
	attachments JSON NOT NULL, 
	fault VARCHAR(20) NOT NULL, 
	detail TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES grading_runs (id)
);
INSERT INTO "check_results" VALUES(1,1,'test_shape','the shape is right',1,4.0,4.0,'passed','ok','[{"kind": "text", "title": "shape", "content": "(3, 4)"}]','','');
INSERT INTO "check_results" VALUES(2,1,'test_accuracy','accuracy above 0.9',0,3.0,6.0,'partial','accuracy 0.85 is below 0.9','[]','','');
INSERT INTO "check_results" VALUES(3,2,'test_shape','the shape is right',1,3.0,4.0,'passed','ok','[{"kind": "text", "title": "shape", "content": "(3, 4)"}]','','');
INSERT INTO "check_results" VALUES(4,2,'test_accuracy','accuracy above 0.9',0,0.0,6.0,'partial','accuracy 0.85 is below 0.9','[]','','');
INSERT INTO "check_results" VALUES(5,3,'test_shape','the shape is right',1,4.0,4.0,'passed','ok','[{"kind": "text", "title": "shape", "content": "(3, 4)"}]','','');
INSERT INTO "check_results" VALUES(6,3,'test_accuracy','accuracy above 0.9',0,5.0,6.0,'partial','accuracy 0.85 is below 0.9','[]','','');
INSERT INTO "check_results" VALUES(7,4,'test_shape','the shape is right',1,0.0,4.0,'passed','ok','[{"kind": "text", "title": "shape", "content": "(3, 4)"}]','','');
INSERT INTO "check_results" VALUES(8,4,'test_accuracy','accuracy above 0.9',0,0.0,6.0,'partial','accuracy 0.85 is below 0.9','[]','','');
CREATE TABLE grading_runs (
	id INTEGER NOT NULL, 
	submission_id INTEGER NOT NULL, 
	checks_sha256 VARCHAR(64) NOT NULL, 
	status VARCHAR(30) NOT NULL, 
	reason TEXT NOT NULL, 
	score FLOAT NOT NULL, 
	max_score FLOAT NOT NULL, 
	device VARCHAR(200) NOT NULL, 
	sandboxed BOOLEAN NOT NULL, 
	queue_s FLOAT NOT NULL, 
	kernel_start_s FLOAT NOT NULL, 
	warmup_s FLOAT NOT NULL, 
	execution_s FLOAT NOT NULL, 
	checks_s FLOAT NOT NULL, 
	store_s FLOAT NOT NULL, 
	report_s FLOAT NOT NULL, 
	graded_at DATETIME NOT NULL, 
	failed_cell JSON, 
	executed_notebook TEXT, 
	weights JSON, 
	staff_detail TEXT NOT NULL, 
	report_error TEXT NOT NULL, 
	raw_score FLOAT, 
	late_penalty FLOAT NOT NULL, 
	late_seconds FLOAT NOT NULL, 
	due_at DATETIME, 
	late_note TEXT NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(submission_id) REFERENCES submissions (id)
);
INSERT INTO "grading_runs" VALUES(1,1,'key1','graded','',7.0,10.0,'CPU',1,0.0,0.0,0.0,2.5,0.0,0.0,0.0,'2026-03-02 10:00:00.000000','null',NULL,'{"model.keras": "abababababababababababababababababababababababababababababababab"}','','',NULL,0.0,0.0,NULL,'');
INSERT INTO "grading_runs" VALUES(2,2,'key1','graded','',3.0,10.0,'CPU',1,0.0,0.0,0.0,2.5,0.0,0.0,0.0,'2026-03-02 10:00:00.000000','null',NULL,'{"model.keras": "abababababababababababababababababababababababababababababababab"}','','',NULL,0.0,0.0,NULL,'');
INSERT INTO "grading_runs" VALUES(3,3,'key1','graded','',9.0,10.0,'CPU',1,0.0,0.0,0.0,2.5,0.0,0.0,0.0,'2026-03-02 10:00:00.000000','null',NULL,'{"model.keras": "abababababababababababababababababababababababababababababababab"}','','',NULL,0.0,0.0,NULL,'');
INSERT INTO "grading_runs" VALUES(4,4,'key1','error','grader',0.0,10.0,'CPU',1,0.0,0.0,0.0,2.5,0.0,0.0,0.0,'2026-03-02 10:00:00.000000','null',NULL,'{"model.keras": "abababababababababababababababababababababababababababababababab"}','the kernel died','',NULL,0.0,0.0,NULL,'');
CREATE TABLE overrides (
	id INTEGER NOT NULL, 
	student VARCHAR(200) NOT NULL, 
	assignment VARCHAR(100) NOT NULL, 
	kind VARCHAR(20) NOT NULL, 
	item VARCHAR(200) NOT NULL, 
	points FLOAT NOT NULL, 
	was FLOAT, 
	comment TEXT NOT NULL, 
	reviewer VARCHAR(200) NOT NULL, 
	made_at DATETIME NOT NULL, 
	notebook_sha256 VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "overrides" VALUES(1,'ann','a1','check','test_accuracy',5.0,3.0,'rounding','ta','2026-03-03 00:00:00.000000','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa');
CREATE TABLE students (
	id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name)
);
INSERT INTO "students" VALUES(1,'ann');
INSERT INTO "students" VALUES(2,'bob');
INSERT INTO "students" VALUES(3,'eve');
CREATE TABLE submissions (
	id INTEGER NOT NULL, 
	student_id INTEGER NOT NULL, 
	assignment VARCHAR(100) NOT NULL, 
	notebook_sha256 VARCHAR(64) NOT NULL, 
	path TEXT NOT NULL, 
	submitted_at DATETIME, 
	seen_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (student_id, assignment, notebook_sha256), 
	FOREIGN KEY(student_id) REFERENCES students (id)
);
INSERT INTO "submissions" VALUES(1,1,'a1','aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','/s/ann.ipynb','2026-03-01 12:00:00.000000','2026-11-26 08:19:41.979939');
INSERT INTO "submissions" VALUES(2,2,'a1','bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','/s/bob.ipynb','2026-03-01 12:00:00.000000','2026-11-26 08:19:41.986755');
INSERT INTO "submissions" VALUES(3,2,'a1','cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc','/s/bob.ipynb','2026-03-01 12:00:00.000000','2026-11-26 08:19:41.988916');
INSERT INTO "submissions" VALUES(4,3,'a1','eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee','/s/eve.ipynb','2026-03-01 12:00:00.000000','2026-11-26 08:19:41.991356');
CREATE INDEX ix_overrides_assignment ON overrides (assignment);
CREATE INDEX ix_overrides_student ON overrides (student);
CREATE INDEX ix_submissions_assignment ON submissions (assignment);
CREATE INDEX ix_grading_runs_submission_id ON grading_runs (submission_id);
CREATE INDEX ix_check_results_run_id ON check_results (run_id);
COMMIT;

BEGIN TRANSACTION;
CREATE TABLE attempts (
            id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, run_id TEXT NOT NULL,
            ok INTEGER NOT NULL, error TEXT, latency_s REAL, model TEXT,
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
INSERT INTO "attempts" VALUES(1,'045f20b9d9bc7744e22c0ffc18096303','10ea8803e01941b0',1,NULL,2.70630770000366283056e-02,'scripted',410,78,1.79612594066759443276e+09);
INSERT INTO "attempts" VALUES(2,'32c9f6a1392dc02358217be61f5142cd','10ea8803e01941b0',1,NULL,3.89896209999847087601e-02,'scripted',386,75,1.79612594068100881578e+09);
INSERT INTO "attempts" VALUES(3,'bdc75ee6e02d902982354075b5da7a21','10ea8803e01941b0',1,NULL,4.09660309999821947712e-02,'scripted',403,85,1.79612594069122219085e+09);
INSERT INTO "attempts" VALUES(4,'143fc94334a8ce42d73129a954c5eb19','10ea8803e01941b0',1,NULL,4.1326293999986773997e-02,'scripted',300,81,1.79612594069122219085e+09);
INSERT INTO "attempts" VALUES(5,'25c3ba61af46a2224de524fa102052e5','6241f56eb96e479d',1,NULL,4.48972300000605173408e-03,'scripted',458,3,1.79612594085213828085e+09);
INSERT INTO "attempts" VALUES(6,'061a650d3c7b1551bd8484ac6c4cc272','6241f56eb96e479d',1,NULL,4.25414300002557865809e-03,'scripted',455,80,1.79612594085798501965e+09);
INSERT INTO "attempts" VALUES(7,'9969e3269f8a14e5424c82d71b4e3ac3','6241f56eb96e479d',1,NULL,3.72532500000488653313e-03,'scripted',458,80,1.79612594086343908307e+09);
INSERT INTO "attempts" VALUES(8,'531da1eb1e0b5ebad8df1f18ac33fd31','6241f56eb96e479d',1,NULL,3.88995299999805865809e-03,'scripted',434,80,1.79612594086870598795e+09);
INSERT INTO "attempts" VALUES(9,'5af674934146c6217fd66a8826666f78','6241f56eb96e479d',1,NULL,3.5574320000364423322e-03,'scripted',431,80,1.79612594087381410596e+09);
INSERT INTO "attempts" VALUES(10,'1bcfe4b437904da244ac512b4701d590','6241f56eb96e479d',1,NULL,3.62324399998215085361e-03,'scripted',431,80,1.796125940879034996e+09);
INSERT INTO "attempts" VALUES(11,'f6fbb342ae3c64cacad1b71b4a7c5035','6241f56eb96e479d',1,NULL,3.55230200000278273364e-03,'scripted',453,80,1.79612594088404178621e+09);
INSERT INTO "attempts" VALUES(12,'2b2b98b73ec57dae8bba92162b4cc7a5','6241f56eb96e479d',1,NULL,3.68298600000116493902e-03,'scripted',453,80,1.79612594088915419575e+09);
INSERT INTO "attempts" VALUES(13,'92d92c9e8624efe8c4772dfa30b9f343','6241f56eb96e479d',1,NULL,3.64336199999115706305e-03,'scripted',451,80,1.79612594089415621755e+09);
INSERT INTO "attempts" VALUES(14,'a817ccec979cae9113ee645cd0c509d7','6241f56eb96e479d',1,NULL,3.53546100001267404877e-03,'scripted',348,80,1.79612594089921617508e+09);
INSERT INTO "attempts" VALUES(15,'5c71ec32a68e35df785b2af069e007f8','6241f56eb96e479d',1,NULL,4.04161599999497411772e-03,'scripted',348,80,1.79612594090459537507e+09);
INSERT INTO "attempts" VALUES(16,'6fff2f0f57573813fd55b16cb9fb0e8f','6241f56eb96e479d',1,NULL,0.00404768700002478,'scripted',348,80,1.79612594091001939776e+09);
INSERT INTO "attempts" VALUES(17,'645cadbfdd3abf4b606cb8a2ed24d515','5475a7a2d3444457',0,'HTTP 500: The server had an error (scripted)',0.0,'',0,0,1.79612594111634016032e+09);
INSERT INTO "attempts" VALUES(18,'645cadbfdd3abf4b606cb8a2ed24d515','5475a7a2d3444457',0,'HTTP 500: The server had an error (scripted)',0.0,'',0,0,1.79612594111634016032e+09);
INSERT INTO "attempts" VALUES(19,'645cadbfdd3abf4b606cb8a2ed24d515','5475a7a2d3444457',0,'HTTP 500: The server had an error (scripted)',0.0,'',0,0,1.79612594111634016032e+09);
INSERT INTO "attempts" VALUES(20,'645cadbfdd3abf4b606cb8a2ed24d515','5475a7a2d3444457',0,'HTTP 500: The server had an error (scripted)',0.0,'',0,0,1.79612594111634016032e+09);
INSERT INTO "attempts" VALUES(21,'645cadbfdd3abf4b606cb8a2ed24d515','5475a7a2d3444457',0,'HTTP 500: The server had an error (scripted)',0.0,'',0,0,1.79612594111634016032e+09);
INSERT INTO "attempts" VALUES(22,'f223fb1b1d4a3ed37f2e6cda5f6ba60e','5475a7a2d3444457',1,NULL,3.76344599999356432817e-03,'scripted',313,80,1.79612594112170577053e+09);
INSERT INTO "attempts" VALUES(23,'b5f7666184ffb29fdeaecd56a7885852','5475a7a2d3444457',1,NULL,3.85000800002899268292e-03,'scripted',305,80,1.79612594112731623649e+09);
CREATE TABLE completions (
            task_id TEXT NOT NULL, turn INTEGER NOT NULL,
            text TEXT NOT NULL, finish_reason TEXT, model TEXT,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            latency_s REAL, created_at REAL NOT NULL,
            PRIMARY KEY (task_id, turn)
        );
INSERT INTO "completions" VALUES('045f20b9d9bc7744e22c0ffc18096303',0,'Scene 1:
Type: Chat
Location: A Viennese salon, winter night
Background: Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.

Scene 2:
Type: Speech
Location: Vienna, Haydn''s study, morning
Background: Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.

Scene 3:
Type: Discussion
Location: Bonn, the Breuning house, an autumn evening
Background: Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.','stop','scripted',410,78,2.70630770000366283056e-02,1.79612594066759443276e+09);
INSERT INTO "completions" VALUES('32c9f6a1392dc02358217be61f5142cd',0,'Scene 1:
Type: Debate
Location: Bonn, the Breuning house, an autumn evening
Background: Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.

Scene 2:
Type: Speech
Location: Vienna, Haydn''s study, morning
Background: Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.

Scene 3:
Type: Debate
Location: Vienna, Haydn''s study, morning
Background: Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.','stop','scripted',386,75,3.89896209999847087601e-02,1.79612594068100881578e+09);
INSERT INTO "completions" VALUES('bdc75ee6e02d902982354075b5da7a21',0,'Scene 1:
Type: Chat
Location: Theater an der Wien, rehearsal, noon
Background: Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.

Scene 2:
Type: Discussion
Location: Theater an der Wien, rehearsal, noon
Background: Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.

Scene 3:
Type: Discussion
Location: Heiligenstadt, a walk by the stream, summer
Background: Beethoven meets Karl at Heiligenstadt. They talk about music, patrons and the hard winter.','stop','scripted',403,85,4.09660309999821947712e-02,1.79612594069122219085e+09);
INSERT INTO "completions" VALUES('143fc94334a8ce42d73129a954c5eb19',0,'Scene 1:
Type: Debate
Location: Bonn, the Breuning house, an autumn evening
Background: Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.

Scene 2:
Type: Discussion
Location: A Viennese salon, winter night
Background: Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.

Scene 3:
Type: Debate
Location: Bonn, the Breuning house, an autumn evening
Background: Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.','stop','scripted',300,81,4.1326293999986773997e-02,1.79612594069122219085e+09);
INSERT INTO "completions" VALUES('25c3ba61af46a2224de524fa102052e5',0,'Background:
Beethoven sits','length','scripted',458,3,4.48972300000605173408e-03,1.79612594085213828085e+09);
INSERT INTO "completions" VALUES('061a650d3c7b1551bd8484ac6c4cc272',0,'Background:
Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.

Therese (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Therese (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',455,80,4.25414300002557865809e-03,1.79612594085798501965e+09);
INSERT INTO "completions" VALUES('9969e3269f8a14e5424c82d71b4e3ac3',0,'Background:
Beethoven sits at the piano while Nikolaus waits by the window. Candles burn low in the small room.

Nikolaus (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Nikolaus (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',458,80,3.72532500000488653313e-03,1.79612594086343908307e+09);
INSERT INTO "completions" VALUES('531da1eb1e0b5ebad8df1f18ac33fd31',0,'Background:
Beethoven sits at the piano while Nikolaus waits by the window. Candles burn low in the small room.

Nikolaus (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Nikolaus (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',434,80,3.88995299999805865809e-03,1.79612594086870598795e+09);
INSERT INTO "completions" VALUES('5af674934146c6217fd66a8826666f78',0,'Background:
Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.

Ferdinand (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Ferdinand (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',431,80,3.5574320000364423322e-03,1.79612594087381410596e+09);
INSERT INTO "completions" VALUES('1bcfe4b437904da244ac512b4701d590',0,'Background:
Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.

Ferdinand (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Ferdinand (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',431,80,3.62324399998215085361e-03,1.796125940879034996e+09);
INSERT INTO "completions" VALUES('f6fbb342ae3c64cacad1b71b4a7c5035',0,'Background:
Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.

Ferdinand (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Ferdinand (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',453,80,3.55230200000278273364e-03,1.79612594088404178621e+09);
INSERT INTO "completions" VALUES('2b2b98b73ec57dae8bba92162b4cc7a5',0,'Background:
Beethoven sits at the piano while Karl waits by the window. Candles burn low in the small room.

Karl (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Karl (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',453,80,3.68298600000116493902e-03,1.79612594088915419575e+09);
INSERT INTO "completions" VALUES('92d92c9e8624efe8c4772dfa30b9f343',0,'Background:
Beethoven sits at the piano while Karl waits by the window. Candles burn low in the small room.

Karl (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Karl (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',451,80,3.64336199999115706305e-03,1.79612594089415621755e+09);
INSERT INTO "completions" VALUES('a817ccec979cae9113ee645cd0c509d7',0,'Background:
Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.

Therese (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Therese (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',348,80,3.53546100001267404877e-03,1.79612594089921617508e+09);
INSERT INTO "completions" VALUES('5c71ec32a68e35df785b2af069e007f8',0,'Background:
Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.

Ferdinand (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Ferdinand (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',348,80,4.04161599999497411772e-03,1.79612594090459537507e+09);
INSERT INTO "completions" VALUES('6fff2f0f57573813fd55b16cb9fb0e8f',0,'Background:
Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.

Therese (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Therese (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',348,80,0.00404768700002478,1.79612594091001939776e+09);
INSERT INTO "completions" VALUES('f223fb1b1d4a3ed37f2e6cda5f6ba60e',0,'Background:
Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.

Ferdinand (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Ferdinand (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',313,80,3.76344599999356432817e-03,1.79612594112170577053e+09);
INSERT INTO "completions" VALUES('b5f7666184ffb29fdeaecd56a7885852',0,'Background:
Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.

Therese (speaking)
Maestro, the publisher asks again for the new sonata.

Beethoven (thinking)
Always the publishers. They hear coins where I hear music.

Beethoven (speaking)
Tell him it will be finished when it is right, not before.

Therese (speaking)
He offers a higher fee if it comes by spring.

Beethoven (speaking)
A fee does not write the finale. Patience, my friend.','stop','scripted',305,80,3.85000800002899268292e-03,1.79612594112731623649e+09);
CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at REAL);
INSERT INTO "migrations" VALUES('0001_initial',1.79612594048159790035e+09);
CREATE TABLE records (
            task_id TEXT NOT NULL, idx INTEGER NOT NULL,
            character TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (task_id, idx)
        );
INSERT INTO "records" VALUES('045f20b9d9bc7744e22c0ffc18096303',0,'beethoven','scene','{"background":"Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.","location":"A Viennese salon, winter night","type":"Chat"}');
INSERT INTO "records" VALUES('045f20b9d9bc7744e22c0ffc18096303',1,'beethoven','scene','{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"}');
INSERT INTO "records" VALUES('045f20b9d9bc7744e22c0ffc18096303',2,'beethoven','scene','{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Discussion"}');
INSERT INTO "records" VALUES('32c9f6a1392dc02358217be61f5142cd',0,'beethoven','scene','{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}');
INSERT INTO "records" VALUES('32c9f6a1392dc02358217be61f5142cd',1,'beethoven','scene','{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"}');
INSERT INTO "records" VALUES('32c9f6a1392dc02358217be61f5142cd',2,'beethoven','scene','{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Debate"}');
INSERT INTO "records" VALUES('bdc75ee6e02d902982354075b5da7a21',0,'beethoven','scene','{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Chat"}');
INSERT INTO "records" VALUES('bdc75ee6e02d902982354075b5da7a21',1,'beethoven','scene','{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Discussion"}');
INSERT INTO "records" VALUES('bdc75ee6e02d902982354075b5da7a21',2,'beethoven','scene','{"background":"Beethoven meets Karl at Heiligenstadt. They talk about music, patrons and the hard winter.","location":"Heiligenstadt, a walk by the stream, summer","type":"Discussion"}');
INSERT INTO "records" VALUES('143fc94334a8ce42d73129a954c5eb19',0,'beethoven','scene','{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}');
INSERT INTO "records" VALUES('143fc94334a8ce42d73129a954c5eb19',1,'beethoven','scene','{"background":"Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.","location":"A Viennese salon, winter night","type":"Discussion"}');
INSERT INTO "records" VALUES('143fc94334a8ce42d73129a954c5eb19',2,'beethoven','scene','{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}');
INSERT INTO "records" VALUES('061a650d3c7b1551bd8484ac6c4cc272',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Therese"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Therese"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"}}');
INSERT INTO "records" VALUES('9969e3269f8a14e5424c82d71b4e3ac3',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Nikolaus waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Nikolaus"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Nikolaus"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Discussion"}}');
INSERT INTO "records" VALUES('531da1eb1e0b5ebad8df1f18ac33fd31',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Nikolaus waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Nikolaus"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Nikolaus"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}}');
INSERT INTO "records" VALUES('5af674934146c6217fd66a8826666f78',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Ferdinand"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Ferdinand"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"}}');
INSERT INTO "records" VALUES('1bcfe4b437904da244ac512b4701d590',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Ferdinand"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Ferdinand"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Debate"}}');
INSERT INTO "records" VALUES('f6fbb342ae3c64cacad1b71b4a7c5035',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Ferdinand"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Ferdinand"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Chat"}}');
INSERT INTO "records" VALUES('2b2b98b73ec57dae8bba92162b4cc7a5',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Karl waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Karl"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Karl"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Discussion"}}');
INSERT INTO "records" VALUES('92d92c9e8624efe8c4772dfa30b9f343',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Karl waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Karl"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Karl"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Karl at Heiligenstadt. They talk about music, patrons and the hard winter.","location":"Heiligenstadt, a walk by the stream, summer","type":"Discussion"}}');
INSERT INTO "records" VALUES('a817ccec979cae9113ee645cd0c509d7',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Therese"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Therese"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}}');
INSERT INTO "records" VALUES('5c71ec32a68e35df785b2af069e007f8',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Ferdinand"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Ferdinand"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.","location":"A Viennese salon, winter night","type":"Discussion"}}');
INSERT INTO "records" VALUES('6fff2f0f57573813fd55b16cb9fb0e8f',0,'beethoven','experience','{"dialogue":{"background":"Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Therese"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Therese"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]},"scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"}}');
INSERT INTO "records" VALUES('f223fb1b1d4a3ed37f2e6cda5f6ba60e',0,'beethoven','protective','{"dialogue":{"background":"Beethoven sits at the piano while Ferdinand waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Ferdinand"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Ferdinand"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]}}');
INSERT INTO "records" VALUES('b5f7666184ffb29fdeaecd56a7885852',0,'beethoven','protective','{"dialogue":{"background":"Beethoven sits at the piano while Therese waits by the window. Candles burn low in the small room.","dropped_turns":0,"turns":[{"action":"speaking","content":"Maestro, the publisher asks again for the new sonata.","speaker":"Therese"},{"action":"thinking","content":"Always the publishers. They hear coins where I hear music.","speaker":"Beethoven"},{"action":"speaking","content":"Tell him it will be finished when it is right, not before.","speaker":"Beethoven"},{"action":"speaking","content":"He offers a higher fee if it comes by spring.","speaker":"Therese"},{"action":"speaking","content":"A fee does not write the finale. Patience, my friend.","speaker":"Beethoven"}]}}');
CREATE TABLE rejections (
            task_id TEXT PRIMARY KEY, reason TEXT NOT NULL, detail TEXT NOT NULL,
            created_at REAL NOT NULL
        );
INSERT INTO "rejections" VALUES('25c3ba61af46a2224de524fa102052e5','truncated','the teacher stopped at max_tokens (finish_reason=length)',1.79612594085213828085e+09);
CREATE TABLE runs (
            id TEXT PRIMARY KEY, pid INTEGER NOT NULL, host TEXT NOT NULL,
            command TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL
        );
INSERT INTO "runs" VALUES('10ea8803e01941b0',2494,'vm','generate scenes scenes beethoven',1.79612594062729883197e+09,1.79612594069256496431e+09);
INSERT INTO "runs" VALUES('6241f56eb96e479d',2494,'vm','generate experiences experiences beethoven',1.79612594084001278875e+09,1.79612594091104865075e+09);
INSERT INTO "runs" VALUES('5475a7a2d3444457',2494,'vm','generate protective protective beethoven',1.79612594104438781737e+09,1.79612594112816286091e+09);
CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            character TEXT NOT NULL, stage TEXT NOT NULL,
            template TEXT NOT NULL, template_version INTEGER NOT NULL,
            model TEXT NOT NULL, params TEXT NOT NULL, inputs TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            lease_run TEXT, lease_expires REAL,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL
        );
INSERT INTO "tasks" VALUES('045f20b9d9bc7744e22c0ffc18096303','beethoven','scenes','scenes',1,'teacher','{"max_tokens":1024,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"1823–1827: The final years\nThe year 1823 saw the completion of three notable works, all of which had occupied Beethoven for some years: the Missa solemnis, the Ninth Symphony and the Diabelli Variations.\n\nBeethoven at last presented the manuscript of the completed Missa to Rudolph on 19 March (more than a year after the archduke''s enthronement as archbishop). But he was in no hurry to get it published or performed as he had formed a notion that he could profitably sell manuscripts of the work to various courts in Germany and Europe at 50 ducats each. One of the few who took up this offer was Louis XVIII of France, who also sent Beethoven a heavy gold medallion. The Symphony and the variations took up most of the rest of Beethoven''s working year. Diabelli hoped to publish both works, but the potential prize of the Mass excited many other publishers to lobby Beethoven for it, including Schlesinger and Carl Friedrich Peters. (In the end, it was obtained by Schotts).\n\nBeethoven had become critical of the Viennese reception of his works. He told the visiting Johann Friedrich Rochlitz in 1822:\nYou will hear nothing of me here ... Fidelio? They cannot give it, nor do they want to listen to it. The symphonies? They have no time for them. My concertos? Everyone grinds out only the stuff he himself has made. The solo pieces? They went out of fashion long ago, and here fashion is everything. At the most, Schuppanzigh occasionally digs up a quartet.","n_scenes":3,"name":"Ludwig van Beethoven","paragraph":49,"sample":0,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594062464976316e+09,1.79612594066759443276e+09);
INSERT INTO "tasks" VALUES('32c9f6a1392dc02358217be61f5142cd','beethoven','scenes','scenes',1,'teacher','{"max_tokens":1024,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Resurgence\nDespite the time occupied by his ongoing legal struggles over Karl, which involved continuing extensive correspondence and lobbying, two events sparked off Beethoven''s major composition projects in 1819. The first was the announcement of Archduke Rudolf''s promotion to Cardinal-Archbishop as Archbishop of Olomouc (now in the Czech Republic), which triggered the Missa solemnis Op. 123, intended to be ready for his installation in Olomouc in March 1820. The other was the invitation by the publisher Antonio Diabelli to 50 Viennese composers, including Beethoven, Franz Schubert, Czerny and the 8-year old Franz Liszt, to compose a variation each on a theme which he provided. Beethoven was spurred to outdo the competition and by mid-1819 had already completed 20 variations of what were to become the 33 Diabelli Variations op. 120. Neither of these works was completed for a few years. A significant tribute of 1819, however, was Archduke Rudolf''s set of 40 piano variations on a theme written for him by Beethoven (WoO 200) and dedicated to the master. Beethoven''s portrait by Ferdinand Schimon  of this year, which was one of the most familiar images of him for the next century, was described by Schindler as, despite its artistic weaknesses, \"in the rendering of that particular look, the majestic forehead ... the firmly shut mouth and the chin shaped like a shell, ... truer to nature than any other picture\".","n_scenes":3,"name":"Ludwig van Beethoven","paragraph":43,"sample":1,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594062464976316e+09,1.79612594068100881578e+09);
INSERT INTO "tasks" VALUES('bdc75ee6e02d902982354075b5da7a21','beethoven','scenes','scenes',1,'teacher','{"max_tokens":1024,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Other middle-period works extend in the same dramatic manner the musical language Beethoven had inherited. The Rasumovsky string quartets and the Waldstein and Appassionata piano sonatas share the Third Symphony''s heroic spirit. Other works of this period include the Fourth through Eighth Symphonies, the oratorio Christ on the Mount of Olives, the opera Fidelio, and the Violin Concerto. Beethoven was hailed in 1810 by the writer and composer E. T. A. Hoffmann, in an influential review in the Allgemeine musikalische Zeitung, as the greatest of (what he considered) the three Romantic composers (that is, ahead of Haydn and Mozart); in Beethoven''s Fifth Symphony his music, wrote Hoffmann, \"sets in motion terror, fear, horror, pain, and awakens the infinite yearning that is the essence of romanticism\".\n\nDuring this time Beethoven''s income came from publishing his works, from performances of them, and from his patrons, for whom he gave private performances and copies of works they commissioned for an exclusive period before their publication. Some of his early patrons, including Lobkowitz and Lichnowsky, gave him annual stipends in addition to commissioning works and purchasing published works. Perhaps his most important aristocratic patron was Archduke Rudolf of Austria, the youngest son of Emperor Leopold II, who in 1803 or 1804 began to study piano and composition with him. They became friends, and their meetings continued until 1824. Beethoven dedicated 14 compositions to Rudolf, including such major works as the Archduke Trio Op. 97 (1811) and Missa solemnis Op. 123 (1823).","n_scenes":3,"name":"Ludwig van Beethoven","paragraph":25,"sample":2,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594062464976316e+09,1.79612594069122219085e+09);
INSERT INTO "tasks" VALUES('143fc94334a8ce42d73129a954c5eb19','beethoven','scenes','scenes',1,'teacher','{"max_tokens":1024,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Shortly after his public debut he arranged for the publication of the first of his compositions to which he assigned an opus number, the three piano trios, Opus 1. These works were dedicated to his patron Prince Lichnowsky, and were a financial success; Beethoven''s profits were nearly sufficient to cover his living expenses for a year. In 1799 Beethoven participated in (and won) a notorious piano ''duel'' at the home of Baron Raimund Wetzlar (a former patron of Mozart) against the virtuoso Joseph Wölfl; and the next year he similarly triumphed against Daniel Steibelt at the salon of Count Moritz von Fries. Beethoven''s eighth piano sonata, the Pathétique (Op. 13, published in 1799), is described by the musicologist Barry Cooper as \"surpass any of his previous compositions, in strength of character, depth of emotion, level of originality, and ingenuity of motivic and tonal manipulation\".","n_scenes":3,"name":"Ludwig van Beethoven","paragraph":16,"sample":3,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594062464976316e+09,1.79612594069122219085e+09);
INSERT INTO "tasks" VALUES('25c3ba61af46a2224de524fa102052e5','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"1823–1827: The final years\nThe year 1823 saw the completion of three notable works, all of which had occupied Beethoven for some years: the Missa solemnis, the Ninth Symphony and the Diabelli Variations.\n\nBeethoven at last presented the manuscript of the completed Missa to Rudolph on 19 March (more than a year after the archduke''s enthronement as archbishop). But he was in no hurry to get it published or performed as he had formed a notion that he could profitably sell manuscripts of the work to various courts in Germany and Europe at 50 ducats each. One of the few who took up this offer was Louis XVIII of France, who also sent Beethoven a heavy gold medallion. The Symphony and the variations took up most of the rest of Beethoven''s working year. Diabelli hoped to publish both works, but the potential prize of the Mass excited many other publishers to lobby Beethoven for it, including Schlesinger and Carl Friedrich Peters. (In the end, it was obtained by Schotts).\n\nBeethoven had become critical of the Viennese reception of his works. He told the visiting Johann Friedrich Rochlitz in 1822:\nYou will hear nothing of me here ... Fidelio? They cannot give it, nor do they want to listen to it. The symphonies? They have no time for them. My concertos? Everyone grinds out only the stuff he himself has made. The solo pieces? They went out of fashion long ago, and here fashion is everything. At the most, Schuppanzigh occasionally digs up a quartet.","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.","location":"A Viennese salon, winter night","type":"Chat"},"scene_ref":"045f20b9d9bc7744e22c0ffc18096303:0","short_name":"Beethoven"}','rejected',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594085213828085e+09);
INSERT INTO "tasks" VALUES('061a650d3c7b1551bd8484ac6c4cc272','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"1823–1827: The final years\nThe year 1823 saw the completion of three notable works, all of which had occupied Beethoven for some years: the Missa solemnis, the Ninth Symphony and the Diabelli Variations.\n\nBeethoven at last presented the manuscript of the completed Missa to Rudolph on 19 March (more than a year after the archduke''s enthronement as archbishop). But he was in no hurry to get it published or performed as he had formed a notion that he could profitably sell manuscripts of the work to various courts in Germany and Europe at 50 ducats each. One of the few who took up this offer was Louis XVIII of France, who also sent Beethoven a heavy gold medallion. The Symphony and the variations took up most of the rest of Beethoven''s working year. Diabelli hoped to publish both works, but the potential prize of the Mass excited many other publishers to lobby Beethoven for it, including Schlesinger and Carl Friedrich Peters. (In the end, it was obtained by Schotts).\n\nBeethoven had become critical of the Viennese reception of his works. He told the visiting Johann Friedrich Rochlitz in 1822:\nYou will hear nothing of me here ... Fidelio? They cannot give it, nor do they want to listen to it. The symphonies? They have no time for them. My concertos? Everyone grinds out only the stuff he himself has made. The solo pieces? They went out of fashion long ago, and here fashion is everything. At the most, Schuppanzigh occasionally digs up a quartet.","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"},"scene_ref":"045f20b9d9bc7744e22c0ffc18096303:1","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594085798501965e+09);
INSERT INTO "tasks" VALUES('9969e3269f8a14e5424c82d71b4e3ac3','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"1823–1827: The final years\nThe year 1823 saw the completion of three notable works, all of which had occupied Beethoven for some years: the Missa solemnis, the Ninth Symphony and the Diabelli Variations.\n\nBeethoven at last presented the manuscript of the completed Missa to Rudolph on 19 March (more than a year after the archduke''s enthronement as archbishop). But he was in no hurry to get it published or performed as he had formed a notion that he could profitably sell manuscripts of the work to various courts in Germany and Europe at 50 ducats each. One of the few who took up this offer was Louis XVIII of France, who also sent Beethoven a heavy gold medallion. The Symphony and the variations took up most of the rest of Beethoven''s working year. Diabelli hoped to publish both works, but the potential prize of the Mass excited many other publishers to lobby Beethoven for it, including Schlesinger and Carl Friedrich Peters. (In the end, it was obtained by Schotts).\n\nBeethoven had become critical of the Viennese reception of his works. He told the visiting Johann Friedrich Rochlitz in 1822:\nYou will hear nothing of me here ... Fidelio? They cannot give it, nor do they want to listen to it. The symphonies? They have no time for them. My concertos? Everyone grinds out only the stuff he himself has made. The solo pieces? They went out of fashion long ago, and here fashion is everything. At the most, Schuppanzigh occasionally digs up a quartet.","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Discussion"},"scene_ref":"045f20b9d9bc7744e22c0ffc18096303:2","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594086343908307e+09);
INSERT INTO "tasks" VALUES('531da1eb1e0b5ebad8df1f18ac33fd31','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Resurgence\nDespite the time occupied by his ongoing legal struggles over Karl, which involved continuing extensive correspondence and lobbying, two events sparked off Beethoven''s major composition projects in 1819. The first was the announcement of Archduke Rudolf''s promotion to Cardinal-Archbishop as Archbishop of Olomouc (now in the Czech Republic), which triggered the Missa solemnis Op. 123, intended to be ready for his installation in Olomouc in March 1820. The other was the invitation by the publisher Antonio Diabelli to 50 Viennese composers, including Beethoven, Franz Schubert, Czerny and the 8-year old Franz Liszt, to compose a variation each on a theme which he provided. Beethoven was spurred to outdo the competition and by mid-1819 had already completed 20 variations of what were to become the 33 Diabelli Variations op. 120. Neither of these works was completed for a few years. A significant tribute of 1819, however, was Archduke Rudolf''s set of 40 piano variations on a theme written for him by Beethoven (WoO 200) and dedicated to the master. Beethoven''s portrait by Ferdinand Schimon  of this year, which was one of the most familiar images of him for the next century, was described by Schindler as, despite its artistic weaknesses, \"in the rendering of that particular look, the majestic forehead ... the firmly shut mouth and the chin shaped like a shell, ... truer to nature than any other picture\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"},"scene_ref":"32c9f6a1392dc02358217be61f5142cd:0","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594086870598795e+09);
INSERT INTO "tasks" VALUES('5af674934146c6217fd66a8826666f78','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Resurgence\nDespite the time occupied by his ongoing legal struggles over Karl, which involved continuing extensive correspondence and lobbying, two events sparked off Beethoven''s major composition projects in 1819. The first was the announcement of Archduke Rudolf''s promotion to Cardinal-Archbishop as Archbishop of Olomouc (now in the Czech Republic), which triggered the Missa solemnis Op. 123, intended to be ready for his installation in Olomouc in March 1820. The other was the invitation by the publisher Antonio Diabelli to 50 Viennese composers, including Beethoven, Franz Schubert, Czerny and the 8-year old Franz Liszt, to compose a variation each on a theme which he provided. Beethoven was spurred to outdo the competition and by mid-1819 had already completed 20 variations of what were to become the 33 Diabelli Variations op. 120. Neither of these works was completed for a few years. A significant tribute of 1819, however, was Archduke Rudolf''s set of 40 piano variations on a theme written for him by Beethoven (WoO 200) and dedicated to the master. Beethoven''s portrait by Ferdinand Schimon  of this year, which was one of the most familiar images of him for the next century, was described by Schindler as, despite its artistic weaknesses, \"in the rendering of that particular look, the majestic forehead ... the firmly shut mouth and the chin shaped like a shell, ... truer to nature than any other picture\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Speech"},"scene_ref":"32c9f6a1392dc02358217be61f5142cd:1","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594087381410596e+09);
INSERT INTO "tasks" VALUES('1bcfe4b437904da244ac512b4701d590','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Resurgence\nDespite the time occupied by his ongoing legal struggles over Karl, which involved continuing extensive correspondence and lobbying, two events sparked off Beethoven''s major composition projects in 1819. The first was the announcement of Archduke Rudolf''s promotion to Cardinal-Archbishop as Archbishop of Olomouc (now in the Czech Republic), which triggered the Missa solemnis Op. 123, intended to be ready for his installation in Olomouc in March 1820. The other was the invitation by the publisher Antonio Diabelli to 50 Viennese composers, including Beethoven, Franz Schubert, Czerny and the 8-year old Franz Liszt, to compose a variation each on a theme which he provided. Beethoven was spurred to outdo the competition and by mid-1819 had already completed 20 variations of what were to become the 33 Diabelli Variations op. 120. Neither of these works was completed for a few years. A significant tribute of 1819, however, was Archduke Rudolf''s set of 40 piano variations on a theme written for him by Beethoven (WoO 200) and dedicated to the master. Beethoven''s portrait by Ferdinand Schimon  of this year, which was one of the most familiar images of him for the next century, was described by Schindler as, despite its artistic weaknesses, \"in the rendering of that particular look, the majestic forehead ... the firmly shut mouth and the chin shaped like a shell, ... truer to nature than any other picture\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Ferdinand at Vienna. They talk about music, patrons and the hard winter.","location":"Vienna, Haydn''s study, morning","type":"Debate"},"scene_ref":"32c9f6a1392dc02358217be61f5142cd:2","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.796125940879034996e+09);
INSERT INTO "tasks" VALUES('f6fbb342ae3c64cacad1b71b4a7c5035','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Other middle-period works extend in the same dramatic manner the musical language Beethoven had inherited. The Rasumovsky string quartets and the Waldstein and Appassionata piano sonatas share the Third Symphony''s heroic spirit. Other works of this period include the Fourth through Eighth Symphonies, the oratorio Christ on the Mount of Olives, the opera Fidelio, and the Violin Concerto. Beethoven was hailed in 1810 by the writer and composer E. T. A. Hoffmann, in an influential review in the Allgemeine musikalische Zeitung, as the greatest of (what he considered) the three Romantic composers (that is, ahead of Haydn and Mozart); in Beethoven''s Fifth Symphony his music, wrote Hoffmann, \"sets in motion terror, fear, horror, pain, and awakens the infinite yearning that is the essence of romanticism\".\n\nDuring this time Beethoven''s income came from publishing his works, from performances of them, and from his patrons, for whom he gave private performances and copies of works they commissioned for an exclusive period before their publication. Some of his early patrons, including Lobkowitz and Lichnowsky, gave him annual stipends in addition to commissioning works and purchasing published works. Perhaps his most important aristocratic patron was Archduke Rudolf of Austria, the youngest son of Emperor Leopold II, who in 1803 or 1804 began to study piano and composition with him. They became friends, and their meetings continued until 1824. Beethoven dedicated 14 compositions to Rudolf, including such major works as the Archduke Trio Op. 97 (1811) and Missa solemnis Op. 123 (1823).","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Chat"},"scene_ref":"bdc75ee6e02d902982354075b5da7a21:0","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594088404178621e+09);
INSERT INTO "tasks" VALUES('2b2b98b73ec57dae8bba92162b4cc7a5','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Other middle-period works extend in the same dramatic manner the musical language Beethoven had inherited. The Rasumovsky string quartets and the Waldstein and Appassionata piano sonatas share the Third Symphony''s heroic spirit. Other works of this period include the Fourth through Eighth Symphonies, the oratorio Christ on the Mount of Olives, the opera Fidelio, and the Violin Concerto. Beethoven was hailed in 1810 by the writer and composer E. T. A. Hoffmann, in an influential review in the Allgemeine musikalische Zeitung, as the greatest of (what he considered) the three Romantic composers (that is, ahead of Haydn and Mozart); in Beethoven''s Fifth Symphony his music, wrote Hoffmann, \"sets in motion terror, fear, horror, pain, and awakens the infinite yearning that is the essence of romanticism\".\n\nDuring this time Beethoven''s income came from publishing his works, from performances of them, and from his patrons, for whom he gave private performances and copies of works they commissioned for an exclusive period before their publication. Some of his early patrons, including Lobkowitz and Lichnowsky, gave him annual stipends in addition to commissioning works and purchasing published works. Perhaps his most important aristocratic patron was Archduke Rudolf of Austria, the youngest son of Emperor Leopold II, who in 1803 or 1804 began to study piano and composition with him. They became friends, and their meetings continued until 1824. Beethoven dedicated 14 compositions to Rudolf, including such major works as the Archduke Trio Op. 97 (1811) and Missa solemnis Op. 123 (1823).","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Nikolaus at Theater an der Wien. They talk about music, patrons and the hard winter.","location":"Theater an der Wien, rehearsal, noon","type":"Discussion"},"scene_ref":"bdc75ee6e02d902982354075b5da7a21:1","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594088915419575e+09);
INSERT INTO "tasks" VALUES('92d92c9e8624efe8c4772dfa30b9f343','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Other middle-period works extend in the same dramatic manner the musical language Beethoven had inherited. The Rasumovsky string quartets and the Waldstein and Appassionata piano sonatas share the Third Symphony''s heroic spirit. Other works of this period include the Fourth through Eighth Symphonies, the oratorio Christ on the Mount of Olives, the opera Fidelio, and the Violin Concerto. Beethoven was hailed in 1810 by the writer and composer E. T. A. Hoffmann, in an influential review in the Allgemeine musikalische Zeitung, as the greatest of (what he considered) the three Romantic composers (that is, ahead of Haydn and Mozart); in Beethoven''s Fifth Symphony his music, wrote Hoffmann, \"sets in motion terror, fear, horror, pain, and awakens the infinite yearning that is the essence of romanticism\".\n\nDuring this time Beethoven''s income came from publishing his works, from performances of them, and from his patrons, for whom he gave private performances and copies of works they commissioned for an exclusive period before their publication. Some of his early patrons, including Lobkowitz and Lichnowsky, gave him annual stipends in addition to commissioning works and purchasing published works. Perhaps his most important aristocratic patron was Archduke Rudolf of Austria, the youngest son of Emperor Leopold II, who in 1803 or 1804 began to study piano and composition with him. They became friends, and their meetings continued until 1824. Beethoven dedicated 14 compositions to Rudolf, including such major works as the Archduke Trio Op. 97 (1811) and Missa solemnis Op. 123 (1823).","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Karl at Heiligenstadt. They talk about music, patrons and the hard winter.","location":"Heiligenstadt, a walk by the stream, summer","type":"Discussion"},"scene_ref":"bdc75ee6e02d902982354075b5da7a21:2","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594089415621755e+09);
INSERT INTO "tasks" VALUES('a817ccec979cae9113ee645cd0c509d7','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Shortly after his public debut he arranged for the publication of the first of his compositions to which he assigned an opus number, the three piano trios, Opus 1. These works were dedicated to his patron Prince Lichnowsky, and were a financial success; Beethoven''s profits were nearly sufficient to cover his living expenses for a year. In 1799 Beethoven participated in (and won) a notorious piano ''duel'' at the home of Baron Raimund Wetzlar (a former patron of Mozart) against the virtuoso Joseph Wölfl; and the next year he similarly triumphed against Daniel Steibelt at the salon of Count Moritz von Fries. Beethoven''s eighth piano sonata, the Pathétique (Op. 13, published in 1799), is described by the musicologist Barry Cooper as \"surpass any of his previous compositions, in strength of character, depth of emotion, level of originality, and ingenuity of motivic and tonal manipulation\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"},"scene_ref":"143fc94334a8ce42d73129a954c5eb19:0","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594089921617508e+09);
INSERT INTO "tasks" VALUES('5c71ec32a68e35df785b2af069e007f8','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Shortly after his public debut he arranged for the publication of the first of his compositions to which he assigned an opus number, the three piano trios, Opus 1. These works were dedicated to his patron Prince Lichnowsky, and were a financial success; Beethoven''s profits were nearly sufficient to cover his living expenses for a year. In 1799 Beethoven participated in (and won) a notorious piano ''duel'' at the home of Baron Raimund Wetzlar (a former patron of Mozart) against the virtuoso Joseph Wölfl; and the next year he similarly triumphed against Daniel Steibelt at the salon of Count Moritz von Fries. Beethoven''s eighth piano sonata, the Pathétique (Op. 13, published in 1799), is described by the musicologist Barry Cooper as \"surpass any of his previous compositions, in strength of character, depth of emotion, level of originality, and ingenuity of motivic and tonal manipulation\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Therese at A Viennese salon. They talk about music, patrons and the hard winter.","location":"A Viennese salon, winter night","type":"Discussion"},"scene_ref":"143fc94334a8ce42d73129a954c5eb19:1","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594090459537507e+09);
INSERT INTO "tasks" VALUES('6fff2f0f57573813fd55b16cb9fb0e8f','beethoven','experiences','experience',1,'teacher','{"max_tokens":2048,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Shortly after his public debut he arranged for the publication of the first of his compositions to which he assigned an opus number, the three piano trios, Opus 1. These works were dedicated to his patron Prince Lichnowsky, and were a financial success; Beethoven''s profits were nearly sufficient to cover his living expenses for a year. In 1799 Beethoven participated in (and won) a notorious piano ''duel'' at the home of Baron Raimund Wetzlar (a former patron of Mozart) against the virtuoso Joseph Wölfl; and the next year he similarly triumphed against Daniel Steibelt at the salon of Count Moritz von Fries. Beethoven''s eighth piano sonata, the Pathétique (Op. 13, published in 1799), is described by the musicologist Barry Cooper as \"surpass any of his previous compositions, in strength of character, depth of emotion, level of originality, and ingenuity of motivic and tonal manipulation\".","min_words":600,"name":"Ludwig van Beethoven","scene":{"background":"Beethoven meets Anna at Bonn. They talk about music, patrons and the hard winter.","location":"Bonn, the Breuning house, an autumn evening","type":"Debate"},"scene_ref":"143fc94334a8ce42d73129a954c5eb19:2","short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594083625555039e+09,1.79612594091001939776e+09);
INSERT INTO "tasks" VALUES('645cadbfdd3abf4b606cb8a2ed24d515','beethoven','protective','protective',1,'teacher','{"max_tokens":1536,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Ludwig van Beethoven (baptised 17 December 1770 – 26 March 1827) was a German composer and pianist. Beethoven remains one of the most admired composers in the history of Western music; his works rank among the most performed of the classical music repertoire and span the transition from the Classical period to the Romantic era in classical music. His career has conventionally been divided into early, middle, and late periods. His early period, during which he forged his craft, is typically considered to have lasted until 1802. From 1802 to around 1812, his middle period showed an individual development from the styles of Joseph Haydn and Wolfgang Amadeus Mozart, and is sometimes characterized as heroic. During this time, he began to grow increasingly deaf. In his late period, from 1812 to 1827, he extended his innovations in musical form and expression.","name":"Ludwig van Beethoven","paragraph":0,"sample":0,"short_name":"Beethoven"}','failed',NULL,NULL,5,'model ''teacher'': gave up after 5 attempt(s); last error: HTTP 500: The server had an error (scripted)',1.79612594104266500472e+09,1.79612594111634016032e+09);
INSERT INTO "tasks" VALUES('f223fb1b1d4a3ed37f2e6cda5f6ba60e','beethoven','protective','protective',1,'teacher','{"max_tokens":1536,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Beethoven was born in Bonn. His musical talent was obvious at an early age. He was initially harshly and intensively taught by his father, Johann van Beethoven. Beethoven was later taught by the composer and conductor Christian Gottlob Neefe, under whose tutelage he published his first work, a set of keyboard variations, in 1783. He found relief from a dysfunctional home life with the family of Helene von Breuning, whose children he loved, befriended, and taught piano. At age 21, he moved to Vienna, which subsequently became his base, and studied composition with Haydn. Beethoven then gained a reputation as a virtuoso pianist, and was soon patronized by Karl Alois, Prince Lichnowsky for compositions, which resulted in his three Opus 1 piano trios (the earliest works to which he accorded an opus number) in 1795.","name":"Ludwig van Beethoven","paragraph":1,"sample":1,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594104266500472e+09,1.79612594112170577053e+09);
INSERT INTO "tasks" VALUES('b5f7666184ffb29fdeaecd56a7885852','beethoven','protective','protective',1,'teacher','{"max_tokens":1536,"mode":"text","temperature":0.7,"top_p":1.0}','{"context":"Beethoven''s first major orchestral work, the First Symphony, premiered in 1800, and his first set of string quartets was published in 1801. Despite his hearing deteriorating during this period, he continued to conduct, premiering his Third and Fifth Symphonies in 1804 and 1808, respectively. His Violin Concerto appeared in 1806. His last piano concerto (No. 5, Op. 73, known as the Emperor), dedicated to his frequent patron Archduke Rudolf of Austria, premiered in 1811, without Beethoven as soloist. He was almost completely deaf by 1814, and he then gave up performing and appearing in public. He described his problems with health and his unfulfilled personal life in two letters, his Heiligenstadt Testament (1802) to his brothers and his unsent love letter to an unknown \"Immortal Beloved\" (1812).","name":"Ludwig van Beethoven","paragraph":2,"sample":2,"short_name":"Beethoven"}','done',NULL,NULL,1,NULL,1.79612594104266500472e+09,1.79612594112731623649e+09);
CREATE INDEX tasks_queue ON tasks (character, stage, status);
CREATE INDEX attempts_task ON attempts (task_id);
CREATE INDEX records_kind ON records (character, kind);
COMMIT;

import AgentDaemon

await DaemonMain.main()

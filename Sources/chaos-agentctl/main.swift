import AgentCtlCommands

await CtlMain.main()

// Job DSL: the pipeline job, built from the repository's Jenkinsfile on every push.
// MLCI_REPO_URL and MLCI_BRANCH come from the controller's environment (docker-compose.yml).
String repo = System.getenv('MLCI_REPO_URL') ?: 'https://github.com/your-org/mlci'
String branchName = System.getenv('MLCI_BRANCH') ?: 'main'

pipelineJob('adult-model') {
    description('Preprocess, train, gate, test and promote the adult-income model (see Jenkinsfile).')
    properties {
        githubProjectUrl(repo)
        pipelineTriggers {
            triggers {
                githubPush()
            }
        }
    }
    definition {
        cpsScm {
            scm {
                git(repo, branchName)
            }
            scriptPath('Jenkinsfile')
            lightweight(true)
        }
    }
}
